// Raspberry Pi 5 + official Active Cooler: every board dimension the enclosure uses (mm).
//
// Board frame: origin at the PCB corner where the USB-C edge meets the microSD end,
// x along the 85 mm edge (towards Ethernet/USB), y along the 56 mm edge (towards the
// 40-pin header), z = 0 on the underside of the PCB.
//
// Positions of the board, holes and connectors follow the Pi 5 mechanical drawing as quoted
// by public models. Connector bodies, plugs and the cooler are envelopes: slightly larger
// than the parts, so a case that clears them clears the real thing. Values marked "(est.)"
// are estimates; measure your board and change them here, and every part follows.

board_size = [85, 56];
board_thickness = 1.5;
board_corner_r = 3;
board_holes = [[3.5, 3.5], [3.5, 52.5], [61.5, 3.5], [61.5, 52.5]];
board_hole_d = 2.7;      // M2.5 clearance
hole_keepout_d = 6.0;    // bare pad around each hole, top and bottom: standoffs and posts fit here

// Everything not listed below stays under these heights (FPC, fan, UART, RTC connectors,
// passives on top; the microSD socket and passives underneath).
top_parts_h = 3.0;       // (est.)
bottom_parts_h = 2.0;    // (est.)

// Connectors reached from outside, one row each:
// [name, edge, along, z0, body_w, body_h, body_depth, overhang, plug_w, plug_h]
//   edge      the board edge it faces: "-y" (USB-C/HDMI edge), "+x" (Ethernet/USB end), "-x" (microSD end)
//   along     centre along that edge, from the board origin
//   z0        bottom of the body (board frame)
//   body_*    width along the edge, height, depth into the board
//   overhang  how far the body's front sticks out past the board edge
//   plug_*    cross-section of what goes in from outside (cable overmold, card + fingertip)
ports = [
    ["usb-c",    "-y", 11.2, 1.5,  9.0,  3.3,  7.5, 1.3, 12.5,  7.0],
    ["hdmi0",    "-y", 25.8, 1.5,  8.2,  3.2,  6.5, 1.2, 11.0,  6.5],
    ["hdmi1",    "-y", 39.2, 1.5,  8.2,  3.2,  6.5, 1.2, 11.0,  6.5],
    ["ethernet", "+x", 10.2, 1.5, 16.2, 13.5, 21.5, 3.0, 12.0, 11.0],
    ["usb-a-0",  "+x", 29.1, 1.5, 13.3, 15.6, 17.6, 3.0, 15.0, 15.6],
    ["usb-a-1",  "+x", 47.0, 1.5, 13.3, 15.6, 17.6, 3.0, 15.0, 15.6],
    // the card sits in a socket under the PCB; "plug" is the card plus a fingertip to pull it
    ["microsd",  "-x", 28.0, -1.4, 12.0, 1.4, 15.0, 2.5, 16.0,  4.0],
    // side-pressed power button; "plug" is a fingertip or pen (position est.)
    ["power",    "-x",  9.5, 1.5,  3.5,  2.5,  3.5, 0.3,  5.0,  4.0],
];

// 40-pin GPIO header: 2 x 20 at 2.54 mm, centred between the mounting holes.
gpio_centre = [32.5, 52.5];
gpio_size = [51.0, 5.1, 8.5];   // x, y, height above the PCB

// Official Active Cooler (heatsink + blower fan), as a box over the SoC.
cooler_min = [7.0, 6.5];        // (est.) clear of the hole pads and the GPIO header
cooler_max = [58.0, 48.5];
cooler_h = 13.7;                // above the PCB
