"""The seed-compatible pages: one module per page, response shapes as in the seeds.

* ``zenskar``: ``GET /entitlements/customer/unique/{customer_id}``;
* ``workspace``: ``GET /api/workspace/entitlement-operations/entitlements``;
* ``tenant``: ``GET /api/web/v4/tenants/{tenantid}/entitlements/{type}``, with the
  tenant page's own entitlement fields (``attributes``).

Their reads are ``services/compat_queries.py`` over ``storage/compat_listing.py``
(the workspace page's typed filters: ``meterd.core.compat_filters``); the native routes
share none of it.
"""
