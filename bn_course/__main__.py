"""`python -m bn_course` runs the `bn-course` command."""

from bn_course.cli import main

raise SystemExit(main())
