GRANT UPDATE, DELETE ON stock_movements TO backroom_inventory;
