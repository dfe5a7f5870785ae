/**
 * Library entry: the gateway as a Layer, and the policies as Effect middlewares usable in any
 * Effect HTTP application without the config loader.
 *
 * @since 0.1.0
 */
export { Gateway, type ConfigSource, type Options, loadIr, validate } from "./Gateway.ts"
export * as Cel from "./cel/Cel.ts"
export * as CelContext from "./cel/Context.ts"
export * as CelFunctions from "./cel/Functions.ts"
export * as ConfigError from "./config/ConfigError.ts"
export * as LocalConfig from "./config/LocalConfig.ts"
export * as Pipeline from "./pipeline/Pipeline.ts"
export * as Policy from "./pipeline/Policy.ts"
export * as PolicyOrder from "./pipeline/PolicyOrder.ts"
export * as ProxyError from "./pipeline/ProxyError.ts"
export * as ProxyResponse from "./pipeline/ProxyResponse.ts"
export * as RequestContext from "./pipeline/RequestContext.ts"
export { Cors, DirectResponse, HeaderModifier, registry } from "./policies/index.ts"
export * as Path from "./routing/Path.ts"
