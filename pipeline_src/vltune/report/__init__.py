"""Report tables (pandas) and plots (matplotlib) for the Snakemake report."""
