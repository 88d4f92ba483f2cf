#include "cellroute/request.h"

namespace cellroute {

bool RequestView::FindHeader(std::string_view name, std::string_view* out) const noexcept {
  for (const Header& h : headers) {
    if (EqualsIgnoreCase(h.name, name)) {
      *out = h.value;
      return true;
    }
  }
  *out = {};
  return false;
}

void Request::SetTarget(std::string_view target) {
  std::size_t q = target.find('?');
  path = std::string(target.substr(0, q));
  query = q == std::string_view::npos ? std::string() : std::string(target.substr(q + 1));
}

void Request::Rebuild(const std::vector<std::pair<std::string, std::string>>& from,
                      std::vector<Header>* to) {
  to->clear();
  for (const auto& [name, value] : from) to->push_back({name, value});
}

void Request::AddHeader(std::string name, std::string value) {
  header_storage_.emplace_back(std::move(name), std::move(value));
  Rebuild(header_storage_, &headers_);  // earlier strings may have moved
}

void Request::AddCookie(std::string name, std::string value) {
  cookie_storage_.emplace_back(std::move(name), std::move(value));
  Rebuild(cookie_storage_, &cookies_);
}

RequestView Request::view() const noexcept {
  RequestView r;
  r.method = method;
  r.host = host;
  r.path = path;
  r.query = query;
  r.headers = headers_;
  r.cookies = cookies_;
  return r;
}

}  // namespace cellroute
