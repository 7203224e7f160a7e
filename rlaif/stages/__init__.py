"""Pipeline stages: each formats requests, calls the generator and stores records."""
