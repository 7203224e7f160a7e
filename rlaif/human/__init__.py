"""Human labels: read annotation files, merge them with AI labels, measure agreement."""
