"""Complete jobs built from the library."""
