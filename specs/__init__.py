"""The shipped network specs, installed as package data so `alexnetc train` finds its default anywhere."""
