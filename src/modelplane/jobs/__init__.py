"""One job system for every long task: a persistent SQL queue, runners, kinds."""
