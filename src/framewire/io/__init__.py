"""I/O plumbing shared by every loop: polling with a wake-up, accepting with
back-off on descriptor exhaustion, dialling, socket errors translated in one
place, send queues and timers."""
