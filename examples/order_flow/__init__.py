"""One order flow built twice, orchestrated and choreographed, run side by side (see __main__)."""
