"""Examples for pgrelay: `make demo` runs demo.py, whose worker loads demo_app.router."""
