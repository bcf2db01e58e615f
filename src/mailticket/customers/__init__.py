"""Customers (organisations): who they are, how mail maps to them, which ticket is whose.

- `schema`: CustomerSpec, the one validation for YAML items and API bodies.
- `loader.load_customers`: CUSTOMERS_PATH with `file:line` errors.
- `directory`: YAML mode (file synced into the tables, API read-only) or database mode
  (API CRUD); ticket <-> customer evidence.
- `matcher`: sender -> customer (exact address > domain > parent domain; shared mail domains
  never by domain), and the distinct customers among a message's addresses.
- `shared`: the free-mail / shared domain list.
"""
