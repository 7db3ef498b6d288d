import sys

from stixd.main import main

sys.exit(main())
