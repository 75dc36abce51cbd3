// What goes inside the case, in the board frame: the PCB, everything on it and the Active
// Cooler, as envelopes. Not printed: the checks render it to prove the case fits.
include <case.scad>

module keepouts() at_holes() circle(d = hole_keepout_d);

report();
union() {
    linear_extrude(board_thickness) difference() { board_outline(); at_holes() circle(d = board_hole_d); }
    // parts on top and underneath, clear of the hole pads
    translate([0, 0, board_top_z]) linear_extrude(top_parts_h) difference() { board_outline(); keepouts(); }
    translate([0, 0, -bottom_parts_h]) linear_extrude(bottom_parts_h) difference() { board_outline(); keepouts(); }
    for (p = ports)
        port_box(p, port_overhang(p) - port_depth(p), port_overhang(p), port_body(p), port_centre_z(p));
    translate([gpio_centre.x - gpio_size.x / 2, gpio_centre.y - gpio_size.y / 2, board_top_z])
        cube(gpio_size);
    translate([cooler_min.x, cooler_min.y, board_top_z])
        cube([cooler_max.x - cooler_min.x, cooler_max.y - cooler_min.y, cooler_h]);
}
