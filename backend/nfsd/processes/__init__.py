"""This process and its children: children that never outlive the process that started them (``lifeline``),
Ctrl-C during an in-process run (``interrupts``)."""
