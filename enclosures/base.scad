// The base of the N0D3 case, in its print pose (floor on the bed). Render: make -C enclosures
include <case.scad>

report();
multmatrix(base_print_matrix) base_assembled();
