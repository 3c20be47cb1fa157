"""`python -m lib.report ...`: render results/report.html (see lib.report.page)."""
from lib.report.page import main

main()
