"""Model backends behind the one `Generator` seam."""
