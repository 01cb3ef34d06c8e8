"""Console entry points (argument parsing only; the work lives in the packages below)."""
