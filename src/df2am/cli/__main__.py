import sys

from df2am.cli import main

sys.exit(main())
