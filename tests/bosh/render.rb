# Renders every template of a BOSH job the way the director does, for the tests.
#
#   ruby render.rb JOB_DIR MANIFEST.json OUT_DIR
#
# MANIFEST.json: {"deployment": "...", "name": "...", "index": 0, "id": "...", "address": "...",
#                 "properties": {...the instance group's properties...}}
#
# Semantics copied from BOSH (director's property resolution + bosh-template's
# EvaluationContext): only properties declared in the job spec reach the templates; each takes
# the manifest's value, else the spec default; p("a.b") walks nested hashes, p(name, default)
# falls back to default, and raises when neither is found; if_p yields only when every named
# property resolved to a non-nil value and supports .else; spec is an object with the
# deployment, name, index, id, address and the resolved properties.
require 'erb'
require 'json'
require 'ostruct'
require 'yaml'
require 'fileutils'

class UnknownProperty < StandardError
  def initialize(names)
    super("Can't find property '#{names.inspect}'")
  end
end

def lookup_property(collection, name)
  name.split('.').inject(collection) do |node, key|
    return nil unless node.is_a?(Hash) && node.key?(key)
    node[key]
  end
end

def set_property(collection, name, value)
  *parents, leaf = name.split('.')
  parents.inject(collection) { |node, key| node[key] ||= {} }[leaf] = value
end

# The director's resolution: declared properties only, manifest value else spec default.
def resolve_properties(spec_properties, manifest_properties)
  resolved = {}
  (spec_properties || {}).each do |name, definition|
    value = lookup_property(manifest_properties, name)
    value = (definition || {})['default'] if value.nil?
    set_property(resolved, name, value) unless value.nil?
  end
  resolved
end

def open_struct(value)
  case value
  when Hash then OpenStruct.new(value.transform_values { |v| open_struct(v) })
  when Array then value.map { |v| open_struct(v) }
  else value
  end
end

class ActiveElseBlock
  def initialize(context)
    @context = context
  end

  def else
    yield
  end

  def else_if_p(*names, &block)
    @context.if_p(*names, &block)
  end
end

class InactiveElseBlock
  def else; end

  def else_if_p(*_names)
    InactiveElseBlock.new
  end
end

class EvaluationContext
  attr_reader :spec, :name, :index

  def initialize(instance, properties)
    @raw_properties = properties
    @name = instance['name']
    @index = instance['index']
    @spec = open_struct(instance.merge('properties' => properties))
  end

  def get_binding
    binding
  end

  def p(*args)
    names = Array(args[0])
    names.each do |name|
      result = lookup_property(@raw_properties, name)
      return result unless result.nil?
    end
    return args[1] if args.length == 2

    raise UnknownProperty, names
  end

  def if_p(*names)
    values = names.map do |name|
      value = lookup_property(@raw_properties, name)
      return ActiveElseBlock.new(self) if value.nil?

      value
    end
    yield(*values)
    InactiveElseBlock.new
  end
end

job_dir, manifest_path, out_dir = ARGV
abort 'usage: ruby render.rb JOB_DIR MANIFEST.json OUT_DIR' unless out_dir

job_spec = YAML.safe_load(File.read(File.join(job_dir, 'spec')))
manifest = JSON.parse(File.read(manifest_path))
instance = {
  'deployment' => 'service-deployment', 'name' => 'service', 'index' => 0,
  'id' => '00000000-0000-4000-8000-000000000000', 'address' => '10.0.0.10', 'bootstrap' => true
}.merge(manifest.reject { |key, _| key == 'properties' })
properties = resolve_properties(job_spec['properties'], manifest['properties'] || {})

# The director's wording for any error a template raises (bosh-template's ERBRenderer):
# "Error filling in template 'backup.yml.erb' (line 12: ...)".
def render_template(job_dir, source, instance, properties)
  path = File.join(job_dir, 'templates', source)
  template = ERB.new(File.read(path), trim_mode: '-')
  template.filename = path
  template.result(EvaluationContext.new(instance, properties).get_binding)
rescue UnknownProperty
  raise
rescue StandardError => e
  line = e.backtrace.to_a.find { |frame| frame.start_with?("#{path}:") }.to_s.split(':')[1]
  warn "Error filling in template '#{source}' (line #{line || '?'}: #{e.message})"
  exit 1
end

begin
  job_spec['templates'].each do |source, destination|
    output = render_template(job_dir, source, instance, properties)
    target = File.join(out_dir, destination)
    FileUtils.mkdir_p(File.dirname(target))
    File.write(target, output)
    File.chmod(destination.start_with?('bin/') ? 0o755 : 0o644, target)
  end
  FileUtils.cp(File.join(job_dir, 'monit'), File.join(out_dir, 'monit'))
rescue UnknownProperty => e
  warn "Error filling in template: #{e.message}"
  exit 1
end
