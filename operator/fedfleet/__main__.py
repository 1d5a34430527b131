import sys

from fedfleet.cli import main

sys.exit(main())
