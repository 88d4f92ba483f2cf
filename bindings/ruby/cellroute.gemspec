Gem::Specification.new do |s|
  s.name = "cellroute"
  s.version = File.read(File.expand_path("../../include/cellroute/version.h", __dir__))
                  .scan(/CR_VERSION_(?:MAJOR|MINOR|PATCH) (\d+)/).join(".")
  s.summary = "Decide which cell serves a request (GitLab Cells routing), in-process"
  s.description = "Ruby binding of cellroute's stable C API: rules, route table, topology sync."
  s.authors = ["cellroute"]
  s.license = "MIT"
  s.files = Dir["lib/**/*.rb", "ext/**/*.{c,rb}"]
  s.extensions = ["ext/cellroute/extconf.rb"]
  s.require_paths = ["lib"]
  s.required_ruby_version = ">= 3.0"
end
