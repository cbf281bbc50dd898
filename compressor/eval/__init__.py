"""Quality, size and cost measurements, and the job report."""
