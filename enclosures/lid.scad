// The lid of the N0D3 case, in its print pose (top on the bed). Render: make -C enclosures
include <case.scad>

report();
multmatrix(lid_print_matrix) lid_assembled();
