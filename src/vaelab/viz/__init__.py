"""Pictures of a run: the tutorial's figures (`plots`), the HTML report (`report`), image grids and
PNG files (`images`). `plots` and `report` need the ``vaelab[plots]`` extra."""
