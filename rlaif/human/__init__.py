"""Human labels: the annotation export, reading label files, merging them with AI labels, agreement."""
