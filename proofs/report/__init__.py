"""Reports of a run: the JSON report, JUnit XML, KTAP, and the live output for humans."""
