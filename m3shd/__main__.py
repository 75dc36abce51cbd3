import sys

from m3shd.cli import main

sys.exit(main())
