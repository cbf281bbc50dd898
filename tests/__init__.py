"""The test suite; a package so that test folders named like the source (api, service, workers) never shadow it."""
