"""The HTTP layer: everything that imports Flask. Routes parse, authenticate, make one call
into the domain, and serialize.
"""
