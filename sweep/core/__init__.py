"""The ground floor every other part shares: errors and their exit codes, reading user files,
the experiment's on-disk layout (what a trial folder holds), the train gate, child processes,
and study URLs without passwords. Imports nothing else of the package."""
