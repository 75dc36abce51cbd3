// Preview pictures, made from the rendered STLs (fast: no CSG). Used by the Makefile:
//   openscad -o png/assembly.png -D 'view="assembly"' preview.scad
include <case.scad>

view = "assembly";   // "base", "lid", "assembly" (exploded, with the board) or "tower"
out_dir = ".";      // where the Makefile put stl/ and build/
explode = 14;        // gap between the halves in the exploded view

// Print pose back to the board frame: the base is only lifted, the lid turned over (a half
// turn about x is its own inverse).
module base_in_place() translate([0, 0, base_bottom_z]) import(str(out_dir, "/stl/base.stl"));
module lid_in_place()
    rotate([180, 0, 0]) translate([0, -board_size.y, -lid_top_z]) import(str(out_dir, "/stl/lid.stl"));
module heads() at_holes() translate([0, 0, lid_top_z]) cylinder(d = screw_head_d, h = screw_head_h);

module case_in_place() {
    color("DimGray") base_in_place();
    color("Gainsboro") lid_in_place();
    color("Silver") heads();
}

if (view == "base") color("DimGray") import(str(out_dir, "/stl/base.stl"));
if (view == "lid") color("Gainsboro") import(str(out_dir, "/stl/lid.stl"));
if (view == "assembly") {
    color("DimGray") base_in_place();
    color("SeaGreen") translate([0, 0, explode]) import(str(out_dir, "/build/board_envelope.stl"));
    translate([0, 0, 3 * explode]) { color("Gainsboro") lid_in_place(); color("Silver") heads(); }
}
if (view == "tower") rotate([0, 0, 180]) for (i = [0 : 2]) translate([0, 0, i * case_height]) case_in_place();
