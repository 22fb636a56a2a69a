// The page the browser test loads from its own origin. It logs in and
// places an order through fetch (the REST routes, JSON), and lists the
// products through gRPC-Web stubs generated from the protos. What it
// shows is what the test asserts; "#status" ends as "done" or "failed: …".

import { createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { InventoryService } from "./gen/backroom/inventory/v1/inventory_pb.js";

const params = new URLSearchParams(location.search);
const need = (name: string): string => {
  const value = params.get(name);
  if (!value) throw new Error(`missing ?${name}=`);
  return value;
};

function show(id: string, text: string): void {
  const element = document.createElement("li");
  element.id = id;
  element.textContent = text;
  document.getElementById("log")!.appendChild(element);
}

async function json(response: Response): Promise<any> {
  const body = await response.json();
  if (!response.ok) {
    throw new Error(`HTTP ${response.status}: ${body.message ?? JSON.stringify(body)}`);
  }
  return body;
}

async function main(): Promise<void> {
  const [account, inventory, payment] = [need("account"), need("inventory"), need("payment")];

  // Login: REST, JSON.
  const session = await json(
    await fetch(`${account}/v1/accounts:login`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ email: need("email"), password: need("password") }),
    }),
  );
  const authorization = `Bearer ${session.accessToken}`;
  show("login", `logged in, token expires ${session.accessTokenExpireTime ?? "?"}`);

  // Products: gRPC-Web through the generated stubs.
  const stock = createClient(InventoryService, createGrpcWebTransport({ baseUrl: inventory }));
  const listed = await stock.listProducts({ pageSize: 10 }, { headers: { authorization } });
  for (const product of listed.products) {
    const price = product.unitPrice
      ? `${(Number(product.unitPrice.amountMinor) / 100).toFixed(2)} ${product.unitPrice.currencyCode}`
      : "unpriced";
    show(`product-${product.sku}`, `${product.sku}: ${product.displayName} ${price}`);
  }

  // Order: REST, JSON; then read until it is final.
  const placed = await json(
    await fetch(`${payment}/v1/orders`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization },
      body: JSON.stringify({
        customer: "accounts/me",
        lines: [{ sku: need("sku"), quantity: "1" }],
        paymentMethod: need("card"),
        shippingAddress: need("address"),
        currencyCode: "EUR",
        requestId: crypto.randomUUID(),
      }),
    }),
  );
  let order = placed;
  for (let i = 0; i < 200 && !["ORDER_STATE_COMPLETED", "ORDER_STATE_FAILED"].includes(order.state); i++) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    order = await json(await fetch(`${payment}/v1/${order.name}`, { headers: { authorization } }));
  }
  show("order", `order ${order.name} ${order.state} total ${order.total?.amountMinor ?? "?"}`);

  // An error through fetch: the google.rpc.Status shape.
  const missing = await fetch(`${inventory}/v1/products/NO-SUCH-SKU`, { headers: { authorization } });
  const status = await missing.json();
  show("error", `HTTP ${missing.status} code ${status.code} ${status.details?.[0]?.reason ?? ""}`);
}

main().then(
  () => {
    document.getElementById("status")!.textContent = "done";
  },
  (error) => {
    document.getElementById("status")!.textContent = `failed: ${error}`;
  },
);
