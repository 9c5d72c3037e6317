"""matcher's HTTP front door: Flask blueprints over the library (no decision is made here).

The app factory is :func:`api.create_app`. Modules, from the request in:

- :mod:`.auth`: authentication and authorization of every request, the access log;
- :mod:`.bodies`: request bodies and ``If-Match``;
- :mod:`.state`: the app's store, the caller's role, the plan in force and caches;
- :mod:`.records`, :mod:`.plans`, :mod:`.nearby`, :mod:`.meta`: the routes of ``/api/v1``;
- :mod:`.webmap`: the map page at ``/``;
- :mod:`.schemas`, :mod:`.openapi`: the OpenAPI document; :mod:`.problems`: every error.
"""
