import sys

from designer.cli.main import main

sys.exit(main())
