import sys

from mailticket.cli import main

sys.exit(main())
