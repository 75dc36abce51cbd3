// Print and case settings (mm). Override any of them when rendering, e.g.
//   make PARAMS='-D wall=3 -D tol=0.3 -D fastener="insert" -D node_number=7'

/* [Print] */
wall = 2.4;            // side walls: a multiple of your line width (0.4 mm nozzle: 6 lines)
floor_t = 2.0;         // base floor
lid_t = 2.0;           // lid top
tol = 0.25;            // gap between mating printed faces: lid on base, stacked cases
board_gap = 0.5;       // PCB edge to the inside of the walls
port_clearance = 0.5;  // around each connector opening, per side
min_bar = 1.5;         // narrower wall strips between two openings are cut away

/* [Board mounting] */
standoff_h = 6.0;      // room under the PCB (also keeps the stacking pockets clear of the screw holes)
standoff_d = 7.0;      // below the parts under the PCB
pad_d = 5.6;           // what touches the PCB (standoff tips, lid posts): inside its 6 mm bare pad
lip_share = 0.5;       // share of the wall that rises above the joint as the base's locating lip
lip_h = 2.0;

/* [Fasteners: 4 x M2.5 pan-head screws through lid, PCB and standoff] */
fastener = "screw";    // "screw": thread-forming into a pilot hole; "insert": M2.5 heat-set insert
screw_length = 25;     // under the head; sets the case height (see lid_top_z)
screw_engagement = 3.5;
screw_clearance_d = 2.9;
screw_pilot_d = 2.2;
screw_head_d = 5.0;    // ISO 7045 M2.5 pan head: the heads are also the stacking pins
screw_head_h = 1.75;
insert_d = 3.6;        // hole for a M2.5 x 4 heat-set insert (3.5 mm outside)
insert_h = 4.0;

/* [Cooling and label] */
vent_w = 2.0;
vent_pitch = 4.0;
label_size = 7;
label_depth = 0.8;
node_number = -1;      // -1: plain "N0D3"; 7: "N0D3-07"
label_font = "Liberation Sans:style=Bold";

$fn = 32;
