import sys

from stixd.balancer.server import main

sys.exit(main())
