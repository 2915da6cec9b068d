"""Job lifecycle, progress reporting, errors and the registry of job kinds."""
