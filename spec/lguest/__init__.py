"""lguest's shadow page tables (drivers/lguest/page_tables.c, 4.7): raw state, x86 walks, LG-* invariants and contracts."""
