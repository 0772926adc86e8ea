# Jupyter's server configuration for Binder and repo2docker images, which copy this repository
# into $HOME: Jupyter reads $HOME/.jupyter/jupyter_server_config.py at start-up. There the server is
# not started by `labkit lab`, so this does what `labkit lab` does for its terminals: bash runs the
# login profile (which resets PATH on Debian), then puts the image's Python environment first,
# so `labkit` and `python` in a terminal are the ones the notebooks use.
c = get_config()  # noqa: F821 (Jupyter defines it while it reads this file)

try:
    from labkit.cli import terminal_shell_command
except ImportError:  # labkit not installed in this environment: keep Jupyter's default shell
    pass
else:
    shell = terminal_shell_command()
    if shell is not None:
        c.ServerApp.terminado_settings = {"shell_command": shell}
