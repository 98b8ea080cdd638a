from netspy_tui.cli import run

run()
