// The N0D3 case, modelled assembled in the board frame of pi5.scad. base.scad and lid.scad
// each turn one half into its print pose; board_envelope.scad models what goes inside.
include <pi5.scad>
include <settings.scad>

// ---- Port table rows -------------------------------------------------------------------
function port_edge(p) = p[1];
function port_along(p) = p[2];
function port_z0(p) = p[3];
function port_body(p) = [p[4], p[5]];     // [width, height] of the connector's face
function port_depth(p) = p[6];
function port_overhang(p) = p[7];
function port_plug(p) = [p[8], p[9]];
function port_opening(p) = [max(port_body(p)[0], port_plug(p)[0]), max(port_body(p)[1], port_plug(p)[1])];
function port_centre_z(p) = port_z0(p) + port_body(p)[1] / 2;

// Each port gets a local frame: x outward from the board edge (0 on the edge), y along the
// edge centred on the port, z as in the board frame.
function edge_point(p) =
    port_edge(p) == "-y" ? [port_along(p), 0] :
    port_edge(p) == "+x" ? [board_size.x, port_along(p)] : [0, port_along(p)];
function edge_angle(p) = port_edge(p) == "-y" ? -90 : port_edge(p) == "+x" ? 0 : 180;

module at_port(p) translate(edge_point(p)) rotate([0, 0, edge_angle(p)]) children();

// A box in a port's frame from x0 to x1, centred on the port, size [width, height] about centre z.
module port_box(p, x0, x1, size, centre_z)
    at_port(p) translate([x0, -size[0] / 2, centre_z - size[1] / 2]) cube([x1 - x0, size[0], size[1]]);

// ---- Heights (board frame: z = 0 under the PCB) ------------------------------------------
board_top_z = board_thickness;
tallest_z = max(concat([for (p = ports) port_z0(p) + port_body(p)[1]],
                       [board_top_z + cooler_h, board_top_z + gpio_size.z]));
base_bottom_z = -(standoff_h + floor_t);
// The screw head sits on the lid and its tip engages the standoff by screw_engagement, so
// the lid's height follows from a stock screw length rather than the other way round.
lid_top_z = screw_length - screw_engagement;
case_height = lid_top_z - base_bottom_z;
split_z = board_top_z;    // base/lid joint: every connector sits on the PCB, above it
headroom = lid_top_z - lid_t - tallest_z;
fastener_hole_d = fastener == "insert" ? insert_d : screw_pilot_d;
fastener_hole_depth = fastener == "insert" ? insert_h + 0.5 : screw_engagement + 1;
pocket_depth = screw_head_h + tol;
standoff_foot_z = -bottom_parts_h - 0.5;   // the standoff narrows to pad_d above this, clear of the parts under the PCB

assert(headroom >= 1, str("screw_length ", screw_length, " leaves ", headroom,
                          " mm above the tallest part: use a longer screw"));
assert(base_bottom_z + pocket_depth + 0.4 <= -fastener_hole_depth,
       "the stacking pockets would break into the fastener holes: raise standoff_h or floor_t");
assert(fastener == "screw" || fastener == "insert", "fastener is \"screw\" or \"insert\"");

// ---- Outlines ----------------------------------------------------------------------------
// The PCB outline grown by `grow` (negative shrinks); the case outline is the PCB's, grown.
module board_outline(grow = 0)
    offset(r = board_corner_r + grow) offset(delta = -board_corner_r) square(board_size);

outer_grow = board_gap + wall;

module slab(z0, z1, grow) translate([0, 0, z0]) linear_extrude(z1 - z0) board_outline(grow);

// ---- Shell: one closed box with every opening, split later into base and lid --------------
module port_cutout(p)
    port_box(p, -board_gap / 2, outer_grow + 1, port_opening(p) + 2 * [port_clearance, port_clearance],
             port_centre_z(p));

// Width of the wall left between the openings of ports a and b (b further along the edge).
function bar_between(a, b) = port_along(b) - port_opening(b)[0] / 2 - port_along(a) - port_opening(a)[0] / 2
                             - 2 * port_clearance;

// A strip of wall thinner than min_bar between two openings would only break off: open it up.
module port_cutouts() {
    for (p = ports) port_cutout(p);
    for (a = ports, b = ports)
        if (port_edge(a) == port_edge(b) && port_along(a) < port_along(b) && bar_between(a, b) < min_bar)
            hull() { port_cutout(a); port_cutout(b); }
}

// Vertical slots in both long walls, level with the cooler's fan and fins: from just above
// the USB-C/HDMI openings to just under the lid's top.
vent_z = [max([for (p = ports) if (port_edge(p) == "-y")
                   port_centre_z(p) + port_opening(p)[1] / 2 + port_clearance]) + 1.5,
          lid_top_z - lid_t - 1];
module side_vents()
    for (x = [cooler_min.x + 3 : vent_pitch : cooler_max.x - 3], y = [-outer_grow - 1, board_size.y])
        translate([x - vent_w / 2, y, vent_z[0]]) cube([vent_w, outer_grow + 1 + board_gap, vent_z[1] - vent_z[0]]);

label_text = node_number < 0 ? "N0D3" : str("N0D3-", node_number < 10 ? "0" : "", node_number);

// Engraved in the microSD end, the face of a tower with its cables at the back.
module label()
    translate([-outer_grow + label_depth, board_size.y / 2, (split_z + lip_h + lid_top_z) / 2])
        rotate([90, 0, -90]) linear_extrude(label_depth + 1)
            text(label_text, size = label_size, font = label_font, halign = "center", valign = "center");

module shell() difference() {
    slab(base_bottom_z, lid_top_z, outer_grow);
    slab(base_bottom_z + floor_t, lid_top_z - lid_t, board_gap);
    port_cutouts();
    side_vents();
    label();
}

// Everything at or below the joint, plus the lip: the inner part of the wall rising lip_h
// above it. `grow` widens it all by the fit tolerance when it is cut from the lid.
lip_outline = board_gap + wall * lip_share;
module lower_region(grow) {
    slab(base_bottom_z - 1, split_z + grow, outer_grow + 1);
    translate([0, 0, split_z]) linear_extrude(lip_h + grow) difference() {
        board_outline(lip_outline + grow);
        board_outline(board_gap - 1);
    }
}

// ---- Halves -----------------------------------------------------------------------------
module at_holes() for (h = board_holes) translate(h) children();

module base_assembled() difference() {
    union() {
        intersection() { shell(); lower_region(0); }
        at_holes() {
            translate([0, 0, -standoff_h - 0.5]) cylinder(d = standoff_d, h = standoff_h + 0.5 + standoff_foot_z);
            translate([0, 0, standoff_foot_z - 0.5]) cylinder(d = pad_d, h = 0.5 - standoff_foot_z);
        }
    }
    at_holes() {
        translate([0, 0, -fastener_hole_depth])
            cylinder(d = fastener_hole_d, h = fastener_hole_depth + 1);
        // pockets under the base take the screw heads on the lid below: the stacking interlock
        translate([0, 0, base_bottom_z - 1]) cylinder(d = screw_head_d + 2 * tol, h = pocket_depth + 1);
    }
}

module lid_assembled() difference() {
    union() {
        difference() { shell(); lower_region(tol); }
        at_holes() translate([0, 0, board_top_z]) cylinder(d = pad_d, h = lid_top_z - lid_t - board_top_z + 0.5);
    }
    at_holes() translate([0, 0, board_top_z - 1]) cylinder(d = screw_clearance_d, h = lid_top_z - board_top_z + 2);
}

// ---- Print poses: the base stands on its floor, the lid on its top ------------------------
base_print_matrix = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, -base_bottom_z], [0, 0, 0, 1]];
lid_print_matrix = [[1, 0, 0, 0], [0, -1, 0, board_size.y], [0, 0, -1, lid_top_z], [0, 0, 0, 1]];

// Figures for the Makefile log and for the checks in tests/test_enclosure.py (one per line).
module report() {
    echo(ports = ports);
    echo(wall = wall);
    echo(tol = tol);
    echo(port_clearance = port_clearance);
    echo(fn = $fn);
    echo(pad_d = pad_d);
    echo(fastener = fastener);
    echo(fastener_hole_d = fastener_hole_d);
    echo(fastener_hole_depth = fastener_hole_depth);
    echo(screw_length = screw_length);
    echo(screw_head = [screw_head_d, screw_head_h]);
    echo(case_height = case_height);
    echo(headroom = headroom);
    echo(base_print_matrix = base_print_matrix);
    echo(lid_print_matrix = lid_print_matrix);
    echo(outer_size = [board_size.x + 2 * outer_grow, board_size.y + 2 * outer_grow, case_height]);
    echo(screws = str("4 x M2.5 x ", screw_length, " pan head", fastener == "insert" ? " + 4 heat-set inserts M2.5 x 4" : ""));
}
