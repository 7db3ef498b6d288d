import sys

from stixctl.main import main

sys.exit(main())
