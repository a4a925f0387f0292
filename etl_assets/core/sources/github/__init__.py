"""GitHub REST v3: client (ETags, Link paging, rate limits), parsers, entity specs, tables; sample/ org."""
