"""The authctl command-line interface. Importing it costs nothing; see ``authctl.cli``."""
