"""Development tools: the local stack, the demo and the terminal view.

Not part of the product: the production wheel and the Docker image leave this
package and its dependencies out. ``campaignctl devstack``, ``demo`` and
``status`` import it when they run; ``make`` installs it (docs/development.md).
"""
