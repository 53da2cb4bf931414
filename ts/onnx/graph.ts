/**
 * A small builder of ONNX graphs. The protobuf messages are onnx-proto's classes (protobufjs code
 * generated from the ONNX schema), so nothing here knows the wire format: this file only names
 * values, collects nodes and initializers, and hands the finished `ModelProto` to its encoder.
 *
 * Weights are written as `raw_data` (little-endian bytes, as the ONNX spec requires), one copy,
 * rather than as the repeated `float_data` field, which protobufjs would encode value by value.
 */
import { onnx } from 'onnx-proto'

import { DataError } from '../errors.js'

/** A row-major float32 tensor. */
export interface HostTensor {
  shape: number[]
  data: Float32Array
}

/** A float attribute (a bare number is an int attribute, a number array an ints attribute). */
export interface FloatAttribute {
  float: number
}
export const float = (value: number): FloatAttribute => ({ float: value })

export type AttributeValue = number | number[] | FloatAttribute | string

/** A graph input or output: float32 with these dims, a string naming a dynamic axis. */
export interface FloatValueInfo {
  name: string
  dims: (number | string)[]
}

export interface ModelOptions {
  inputs: FloatValueInfo[]
  outputs: FloatValueInfo[]
  opsetVersion: number
  irVersion: number
  producerName: string
  graphName: string
  docString?: string
  metadata: Record<string, string>
}

/**
 * Protobuf messages are limited to 2 GiB, and a model with its weights inside is one message
 * (ONNX's external-data layout lifts this; nothing this engine trains comes near: ViT-B is 344 MB).
 */
const MAX_MODEL_BYTES = 2 ** 31 - 1

const littleEndianHost = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1

/** The tensor's values as little-endian bytes (a view of them on a little-endian host). */
function littleEndianBytes(data: Float32Array): Uint8Array {
  if (littleEndianHost) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
  const out = new Uint8Array(data.byteLength)
  const view = new DataView(out.buffer)
  data.forEach((v, i) => view.setFloat32(4 * i, v, true))
  return out
}

function attribute(name: string, value: AttributeValue): onnx.IAttributeProto {
  const { AttributeType } = onnx.AttributeProto
  if (typeof value === 'string') return { name, type: AttributeType.STRING, s: new TextEncoder().encode(value) }
  if (typeof value === 'number') {
    if (!Number.isInteger(value)) throw new Error(`attribute ${name}: ${value} is not an integer (use float())`)
    return { name, type: AttributeType.INT, i: value }
  }
  if (Array.isArray(value)) return { name, type: AttributeType.INTS, ints: value }
  return { name, type: AttributeType.FLOAT, f: value.float }
}

function valueInfo({ name, dims }: FloatValueInfo): onnx.IValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType: onnx.TensorProto.DataType.FLOAT,
        shape: { dim: dims.map((d) => (typeof d === 'string' ? { dimParam: d } : { dimValue: d })) },
      },
    },
  }
}

export class GraphBuilder {
  private readonly nodes: onnx.INodeProto[] = []
  private readonly initializers: onnx.ITensorProto[] = []
  private readonly names = new Set<string>()
  private weightBytes = 0

  /** `wanted` if no value has that name yet, else `wanted_2`, `wanted_3`, ... */
  private fresh(wanted: string): string {
    let name = wanted
    for (let k = 2; this.names.has(name); k++) name = `${wanted}_${k}`
    this.names.add(name)
    return name
  }

  /** Reserves `name` exactly (a graph input, a weight). */
  input(name: string): string {
    if (this.names.has(name)) throw new Error(`graph value ${name} already exists`)
    this.names.add(name)
    return name
  }

  /** A float32 initializer under `name` (exactly that name: weights keep their timm names). */
  weight(name: string, tensor: HostTensor): string {
    return this.floatInitializer(this.input(name), tensor)
  }

  /** A float32 constant (a scalar when `shape` is empty); its name is `hint` made unique. */
  floats(hint: string, values: number[], shape: number[] = [values.length]): string {
    return this.floatInitializer(this.fresh(hint), { shape, data: Float32Array.from(values) })
  }

  private floatInitializer(name: string, tensor: HostTensor): string {
    this.weightBytes += tensor.data.byteLength
    if (this.weightBytes > MAX_MODEL_BYTES) {
      throw new DataError(`the weights exceed the 2 GiB that a single-file ONNX model can hold (at ${name})`, 'too-large')
    }
    this.initializers.push({
      name,
      dims: tensor.shape,
      dataType: onnx.TensorProto.DataType.FLOAT,
      rawData: littleEndianBytes(tensor.data),
    })
    return name
  }

  /** An int64 constant (shapes, indices). */
  int64s(hint: string, values: number[], shape: number[] = [values.length]): string {
    const name = this.fresh(hint)
    this.initializers.push({ name, dims: shape, dataType: onnx.TensorProto.DataType.INT64, int64Data: values })
    return name
  }

  /**
   * Adds one node of the default (ai.onnx) domain; returns its output, named `output` (made
   * unique), which also names the node.
   */
  op(opType: string, inputs: string[], output: string, attributes: Record<string, AttributeValue> = {}): string {
    const name = this.fresh(output)
    this.nodes.push({
      opType,
      name,
      input: inputs,
      output: [name],
      attribute: Object.entries(attributes).map(([k, v]) => attribute(k, v)),
    })
    return name
  }

  /** The serialised `ModelProto`. */
  encode(options: ModelOptions): Uint8Array {
    const model = onnx.ModelProto.create({
      irVersion: options.irVersion,
      opsetImport: [{ domain: '', version: options.opsetVersion }],
      producerName: options.producerName,
      docString: options.docString,
      graph: {
        name: options.graphName,
        node: this.nodes,
        initializer: this.initializers,
        input: options.inputs.map(valueInfo),
        output: options.outputs.map(valueInfo),
      },
      metadataProps: Object.entries(options.metadata).map(([key, value]) => ({ key, value })),
    })
    return onnx.ModelProto.encode(model).finish()
  }
}
