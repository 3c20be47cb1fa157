"""`python -m lib.report ...`: render results/report.html (see lib.report.render)."""
from lib.report.render import main

main()
