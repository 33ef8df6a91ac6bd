"""Identity resolution: which values identify a person, and merging profiles that share one."""
