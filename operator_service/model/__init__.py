"""The vocabulary every layer shares: job statuses and the compute workflow. Pure data, no I/O."""
