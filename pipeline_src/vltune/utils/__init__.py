"""Small helpers shared by all stages (file I/O, seeding, devices)."""
