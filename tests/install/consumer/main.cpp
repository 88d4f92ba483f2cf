#include <cellroute/router.h>

#include <iostream>

int main() {
  auto router = cellroute::Router::FromDefaults();
  if (!router.ok()) return 1;
  cellroute::Request r;
  r.SetTarget("/o/acme-corp/x");
  std::cout << router->Route(r.view()).cell_id() << "\n";
  return 0;
}
